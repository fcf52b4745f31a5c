"""`python -m grpo_lib` (and `torchrun ... -m grpo_lib`): train with GRPO from the command line.

    python -m grpo_lib --preset tiny --output-dir runs/tiny          # all options: python -m grpo_lib --help

The options are grpo_lib.cli's (one per config field); the algorithm is grpo_lib.train. `python -m grpo_lib.train`
is the same command.
"""

# lock --output-dir now, before the imports below take seconds, so the run started first wins
# (grpo_lib.run.rundir choice 4); grpo_lib.run.rundir imports only the standard library
from grpo_lib.run.rundir import lock_output_dir_at_start

lock_output_dir_at_start()

import sys  # noqa: E402  (after the early lock, on purpose)

from grpo_lib.cli import main  # noqa: E402  (imports torch: after the early lock, on purpose)

sys.exit(main())
