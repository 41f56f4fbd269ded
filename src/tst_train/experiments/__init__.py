"""Experiments built on the trainer: arms, equal-FLOPs comparisons, sweeps, their analysis and reports.

    arms      the arms of a comparison (baseline, tst, ablations) and the runner that trains them
    compare   `tst compare`: every arm × seed, Δ at equal FLOPs, speed-ups, report
    sweep     `tst sweep`: grids over shape, learning rate, FLOP budget, bag size, fraction, weighting
    analysis  pure functions: deltas, crossings, confidence intervals
    report    Markdown/HTML reports with plots
    demo      the settings of `tst demo`

This package uses the trainer (``tst_train.train.run_training``) as any outside script would; nothing
in the trainer imports it.
"""
