"""`python -m grpo_lib.trl_recipe`: the earlier name of `python -m grpo_lib.trl.recipe`, kept so older commands
still work. The recipe itself is grpo_lib/trl/recipe.py; import from `grpo_lib.trl.recipe`."""

if __name__ == "__main__":
    import runpy

    runpy.run_module("grpo_lib.trl.recipe", run_name="__main__", alter_sys=True)   # takes the early lock first
