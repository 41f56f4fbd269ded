"""Experiments built on the trainer: arms, equal-FLOPs comparisons, sweeps, their analysis and reports.

    arms      the arms of a comparison (baseline, tst, ablations) and the one runner that trains every command's runs
    names     run and arm names, derived from their configs
    compare   `tst compare`: every arm × seed, Δ at equal FLOPs, report
    sweep     `tst sweep`: grids over shape, learning rate, FLOP budget, bag size, fraction, weighting
    study     a sweep pool read back: Δ against width, each TST group against the frontier
    curve     `tst curve`: a baseline's loss against compute, from one run and cooldown branches
    compute   the definitions: compute curves, the equal-loss speed-up on them, the frontier with steps
    stats     intervals on scipy.stats: t, paired, Welch, bootstrap; timing spreads
    analysis  pure functions on one run's records: deltas, crossings, equal-data losses
    report    Markdown/HTML reports and plots of every command
    demo      `tst demo`: the speed-up at one shape and where it stands, in 10 CPU minutes

This package uses the trainer (``tst_train.train.run_training``) as any outside script would; nothing
in the trainer imports it.
"""
