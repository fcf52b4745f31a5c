"""grpo_lib: the tested helpers behind the GRPO course notebooks.

GRPO (Group Relative Policy Optimization) comes from Shao et al. (2024), DeepSeekMath, arXiv 2402.03300.
Each module teaches one idea and names the notebook that teaches it; ``docs/architecture.md`` has the map.

Symbol legend (paper -> code), used verbatim in notebook 01 and the docs:

==============================  ==================  ==================  ==========================================
paper                           code name           shape / type        meaning
==============================  ==================  ==================  ==========================================
q                               ``q``, ``q_ids``    str; (N, P)         a prompt (question)
G                               ``G``               int                 completions sampled per prompt
o_i                             ``o``, ``o_ids``    str; (B, T)         the i-th completion; B = N * G rows
|o_i|                           ``o_len``           (B,)                completion length = ``mask.sum(-1)``
r_i                             ``r``               (N, G)              scalar reward of completion i
A_i  (Â_{i,t})                  ``A``               (N, G) -> (B,)      group-relative advantage, same for all t
π_θ                             ``pi_theta``        nn.Module           the policy being trained
π_θold                          ``logp_old``        (B, T)              log-probs of the policy that sampled
π_ref                           ``logp_ref``        (B, T)              log-probs of the frozen reference policy
log π_θ(o_{i,t} | q, o_{i,<t})  ``logp``            (B, T)              per-token log-probability
ρ_{i,t} = π_θ / π_θold          ``rho``             (B, T)              importance ratio
ε                               ``epsilon``         float               clip range of ``rho``
β                               ``beta``            float               KL coefficient
μ                               ``mu``              int                 policy updates per sampled batch
D_KL (k3 estimator)             ``kl``              (B, T)              e^d - d - 1, d = logp_ref - logp
—                               ``mask``            (B, T)              1 on completion tokens (EOS included)
==============================  ==================  ==================  ==========================================

Shape letters: N prompts per step, G group size, B = N * G completions, P prompt length,
T completion length after padding, V vocabulary size.
"""

__version__ = "0.1.0"
