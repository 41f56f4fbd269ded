# The study's training settings, shared by run.sh, data-order.sh and vocab.sh (sourced): cells from the three
# scripts compare only if they train alike. The demo's budget: 3000 steps x 8 rows x 64 positions, uniform
# weights, warmup 20, decay over the last 20 %; one thread per run, two runs side by side.
STUDY_FLAGS=(--preset tiny --steps 3000 --batch-size 8 --seq-len 64 --weightings uniform --jobs 2
             --eval-every 250 --train.warmup_steps=20 --train.decay_frac=0.2 --eval.tokens=32768
             --log.tensorboard=false --checkpoint.every=500 --checkpoint.keep=1)
