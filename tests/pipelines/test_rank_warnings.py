"""Python warnings raised inside a rank go to that rank's log file, not to the terminal (which a running rank
leaves silent)."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

EVERY_RANK = "a warning that every rank raises"
RANK_ONE = "a warning that only rank 1 raises"


class WarnInRank:
    """A pipeline step that raises Python warnings: the same one in every rank, and one more in rank 1."""

    def __call__(self, data, rank: int, world_size: int):
        warnings.warn(EVERY_RANK, UserWarning, stacklevel=1)
        if rank == 1:
            warnings.warn(RANK_ONE, RuntimeWarning, stacklevel=1)
        yield from data or ()


SCRIPT = """
import sys
from pipelines.executor import DaskPipelineExecutor
from tests.pipelines.test_rank_warnings import WarnInRank

DaskPipelineExecutor([WarnInRank()], tasks=2, workers=1, logging_dir=sys.argv[1], progress=False).run()
print("finished")
"""


def test_a_warning_in_a_rank_goes_to_its_log_and_not_to_the_terminal(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "logs")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=180,
    )

    assert done.returncode == 0 and done.stdout.strip() == "finished", done.stderr
    terminal = done.stdout + done.stderr
    assert EVERY_RANK not in terminal and RANK_ONE not in terminal, terminal
    # both ranks ran in the one worker process: each still logs the warning it raised
    rank0, rank1 = ((tmp_path / "logs" / "logs" / f"task_{r:05d}.log").read_text() for r in (0, 1))
    assert f"UserWarning: {EVERY_RANK}" in rank0 and f"UserWarning: {EVERY_RANK}" in rank1, (rank0, rank1)
    assert f"RuntimeWarning: {RANK_ONE}" in rank1 and RANK_ONE not in rank0, (rank0, rank1)
