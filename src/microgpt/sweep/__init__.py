"""`microgpt sweep`: many runs at once, a grid or a random search over train flags, each
config with several seeds, on every core; resumable; with a ranked table and pictures.

    microgpt sweep --out sweeps/lr --set learning_rate=0.003,0.01,0.03 --seeds 5 --steps 500

A front end like the others: flags become typed specs (space.py), and every trial is an
ordinary run directory that the run library starts, trains and resumes (runs.py), in a
worker process (pool.py, worker.py). The sweep directory holds the trials and what they
found (store.py); the table (summary.py) and the pictures (pictures.py) are made from
DIR/results.jsonl. With `--backend optuna` (the `sweep` extra), Optuna's TPE chooses the
configs and prunes weak trials, and several machines can share one study (search.py).
"""

from .command import add_sweep_parser

__all__ = ["add_sweep_parser"]
