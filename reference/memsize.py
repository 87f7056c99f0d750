"""Memory one training run takes, from plain numbers: the reference's batched trainer sizes its batches
with it, and the grader's side of the training service (which never imports torch) its quotas."""

from __future__ import annotations

# Training images gathered per run per chunk of steps (small on a CPU so a run's minibatches
# stay in cache), and test images per evaluation chunk. Neither depends on how many runs share
# the batch, so neither can change a run's numbers.
CHUNK_ROWS = {"cpu": 1280, "cuda": 4096}
EVAL_ROWS = {"cpu": 2048, "cuda": 4096}


def bytes_per_run(shape: dict, batch_size: int, hidden: int) -> int:
    """Device memory one run adds to a batch: parameters and momentum, step buffers, the gathered
    chunk of images with its one-hot labels and logits, the test-set evaluation, per-sample losses.
    shape: reference.trainer.data_shape of the data."""
    item, width, classes, n, n_test = (shape[k] for k in ("item", "width", "classes", "n", "n_test"))
    chunk = CHUNK_ROWS.get(shape["device"], CHUNK_ROWS["cuda"])
    rows = EVAL_ROWS.get(shape["device"], EVAL_ROWS["cuda"])
    params = 2 * (width * hidden + (hidden + 1) * classes)
    step = batch_size * (2 * hidden + 1 + classes)
    gathered = chunk * (width + 3 * classes)
    evaluation = rows * (hidden + 1 + 2 * classes) * 2
    return item * (params + step + gathered + evaluation + n + n_test) + 8 * 3 * n


def request_bytes(shape: dict, batch_size: int, hidden: int) -> int:
    """Memory one request of the training service takes while it trains, alone (the kit's loop) or in a
    batch, whichever is more."""
    n, input_dim, classes = shape["n"], shape["input_dim"], shape["classes"]
    batch = min(batch_size, n)
    params = hidden * (input_dim + 1) + classes * (hidden + 1)
    width = hidden + classes
    alone = 4 * (3 * params + 3 * batch * width + 2 * 8192 * width + batch * input_dim) + 8 * n
    return max(alone, bytes_per_run(shape, batch, hidden))
