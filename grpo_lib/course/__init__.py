"""The course wing of grpo_lib: what only the notebooks and the classroom use.

- `plots`: pure figure builders (fixed axes), in notebook order (01 to 05).
- `widgets`: the ε and β sliders of notebook 04 (ipywidgets around the plots).
- `notebook`: display helpers for cells (`show_source`, `markdown_table`) and `run_torchrun`.
- `memory`: parameter counts from a config, the GRPO vs PPO memory table, the per-GPU memory planner.
- `evaluation`: sampled evaluation, pass@k and maj@k curves with bootstrap intervals, Fisher's exact test.
- `exercises`: the checkers of the fill-in exercises, one module per notebook (`ex01` ... `ex06`), sharing
  `exercises.checking`.

The engine and the GRPO math (grpo_lib/*.py, grpo_lib/run/, grpo_lib/trl/) never import from here;
tests/test_layout.py checks it.
"""
