"""The training service: a trusted host process that trains the lab's standard calls for sandboxed notebooks."""
