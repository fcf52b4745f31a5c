"""The bridge to TRL's GRPOTrainer: `recipe` (the same run, trained by TRL: `python -m grpo_lib.trl.recipe`)
and `compare` (the golden comparison of the loss with TRL's, for the tests and notebooks 04 and 06).

This file imports nothing, so the recipe's early lock (taken before torch is imported) stays cheap.
"""
