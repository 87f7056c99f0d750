"""`labgrader check`'s parts: the student's own runs as evidence, each file and question judged, the text output."""
