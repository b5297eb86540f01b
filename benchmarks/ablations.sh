#!/usr/bin/env bash
# The MIR-1K ablations behind benchmarks/README.md. Every variant trains on the same patch
# budget (EPOCHS x SAMPLES patches; levers that change what a patch costs, on the same
# minutes, TIMED_MINUTES), is chosen on validation clips of the training singers, then
# scores every test clip under ROOT.
#   ROOT=../shared/data/MIR-1K bash benchmarks/ablations.sh            # the defaults' table (CPU)
#   ROOT=... PARALLEL=1 DEVICE=cuda bash benchmarks/ablations.sh       # all at once on one GPU
#   ROOT=... bash benchmarks/ablations.sh levers                       # the levers' table, 12 epochs
set -u
ROOT=${ROOT:?set ROOT to a MIR-1K folder}
ROUND=${1:-defaults}
EPOCHS=${EPOCHS:-$([ "$ROUND" = levers ] && echo 12 || echo 45)}
SAMPLES=${SAMPLES:-$([ "$ROUND" = levers ] && echo 0 || echo 2000)}  # 0: every training patch per epoch
PARALLEL=${PARALLEL:-0}
DEVICE=${DEVICE:-auto}
MINUTES=${MINUTES:-600}  # safety cap per variant
TIMED_MINUTES=${TIMED_MINUTES:-12.3}  # what the levers' default took for its 12 epochs here; measure yours
EXTRA_SET=${EXTRA_SET:-}  # overrides for every variant, e.g. train.data_workers=1
mkdir -p results/ablations

train_variant() {  # name, training overrides...
  local name=$1${HOLD_OUT:+-holdout-$HOLD_OUT}; shift
  local sets=()
  for s in "$@" $EXTRA_SET; do sets+=(--set "$s"); done
  local samples=()
  [ "$SAMPLES" != 0 ] && samples=(--samples "$SAMPLES")
  "${PYTHON:-python}" benchmarks/mir1k.py --root "$ROOT" --epochs "$EPOCHS" "${samples[@]}" --minutes "$MINUTES" \
    --device "$DEVICE" --workers 2 --name "ablation-$name" "${sets[@]}" ${HOLD_OUT:+--hold-out "$HOLD_OUT"} \
    > "results/ablations/$name.log" 2>&1
}

timed_variant() {  # name, training overrides...: TIMED_MINUTES of training instead of EPOCHS
  EPOCHS=0 MINUTES=$TIMED_MINUTES train_variant "$@"
}

separation_variant() {  # name, separation overrides... (scores the default model)
  local name=$1; shift
  local sets=()
  for s in "$@"; do sets+=(--eval-set "$s"); done
  "${PYTHON:-python}" benchmarks/mir1k.py --root "$ROOT" --skip-training --checkpoint checkpoints/ablation-default/best.pt \
    --device "$DEVICE" --workers 2 --name "ablation-$name" "${sets[@]}" > "results/ablations/$name.log" 2>&1
}

launch() {
  if [ "$PARALLEL" = 1 ]; then "$@" & else "$@"; fi
}

if [ "$ROUND" = levers ]; then  # each lever alone (and pitch shifts + SDR loss), two seeds; HOLD_OUT=abjones: trained on amy, scored on abjones
  then="train.loss=magnitude train.pitch_shifts= train.lr=1e-3"  # the default of the levers' time, whatever today's is
  pitch_sdr="train.pitch_shifts=-2,-1,1,2 train.loss=sdr"  # pitch shifts and the SDR loss, both in the default since
  today="$pitch_sdr train.lr=2e-3"  # today's default: the pair above and twice the learning rate
  for seed in 42 7; do
    launch train_variant "base-s$seed" "train.seed=$seed" $then
    launch train_variant "sdr-loss-s$seed" "train.seed=$seed" $then train.loss=sdr
    launch train_variant "input-power-0.3-s$seed" "train.seed=$seed" $then model.input_power=0.3
    launch train_variant "pitch-shifts-s$seed" "train.seed=$seed" $then train.pitch_shifts=-2,-1,1,2
    launch train_variant "ema-0.998-s$seed" "train.seed=$seed" $then train.ema=0.998
    launch train_variant "pitch-sdr-s$seed" "train.seed=$seed" $then $pitch_sdr
    launch train_variant "pitch-sdr-batch-8-s$seed" "train.seed=$seed" $then $pitch_sdr train.batch_size=8
    launch train_variant "pitch-sdr-lr-2e-3-s$seed" "train.seed=$seed" $then $pitch_sdr train.lr=2e-3
    launch train_variant "pitch-sdr-lr-3e-3-s$seed" "train.seed=$seed" $then $pitch_sdr train.lr=3e-3
    launch train_variant "pitch-sdr-lr-2e-3-gains-0.25-2-s$seed" "train.seed=$seed" $then $today train.gain_range=0.25,2
    launch train_variant "pitch-sdr-lr-2e-3-no-dropout-s$seed" "train.seed=$seed" $then $today model.dropout=0
    launch train_variant "pitch-sdr-lr-2e-3-dropout-5-layers-s$seed" "train.seed=$seed" $then $today model.dropout_layers=5
    launch train_variant "pitch-4-sdr-lr-2e-3-s$seed" "train.seed=$seed" $then $today train.pitch_shifts=-4,-3,-2,-1,1,2,3,4
    launch train_variant "pitch-sdr-lr-2e-3-eq-6-s$seed" "train.seed=$seed" $then $today train.eq_db=6
    launch train_variant "pitch-sdr-lr-2e-3-remix-1-s$seed" "train.seed=$seed" $then $today train.remix_prob=1
    launch train_variant "pitch-sdr-lr-2e-3-random-offsets-s$seed" "train.seed=$seed" $then $today train.random_offsets=true
    launch train_variant "pitch-sdr-lr-2e-3-bin-position-s$seed" "train.seed=$seed" $then $today model.bin_position=true
    launch train_variant "pitch-sdr-lr-2e-3-weight-decay-0.05-s$seed" "train.seed=$seed" $then $today train.weight_decay=0.05
    launch train_variant "pitch-sdr-lr-2e-3-inst-frequency-s$seed" "train.seed=$seed" $then $today model.inst_frequency=true
    launch train_variant "pitch-sdr-lr-2e-3-magnitude-weight-1000-s$seed" "train.seed=$seed" $then $today train.magnitude_weight=1000
    launch train_variant "pitch-sdr-lr-2e-3-time-stretch-s$seed" "train.seed=$seed" $then $today train.time_stretches=0.8,0.9,1.1,1.25
    # as much input per second of audio as the default's STFT: its 12 epochs take about the default's minutes
    launch train_variant "pitch-sdr-lr-2e-3-stft-2048-512-s$seed" "train.seed=$seed" $then $today audio.n_fft=2048 audio.hop_length=512
    # the widths' rows ran with DEVICE=cuda (a step there is bound by kernel launches, not arithmetic)
    launch train_variant "pitch-sdr-lr-2e-3-width-2x-s$seed" "train.seed=$seed" $then $today model.channels=32,64,128,256,512,1024
    launch train_variant "pitch-sdr-lr-2e-3-width-3x-s$seed" "train.seed=$seed" $then $today model.channels=48,96,192,384,768,1536
    # levers that change what a patch costs get the default's minutes instead of its epochs
    launch timed_variant "pitch-sdr-half-width-s$seed" "train.seed=$seed" $then $pitch_sdr model.channels=8,16,32,64,128,256
    launch timed_variant "pitch-sdr-context-256-s$seed" "train.seed=$seed" $then $pitch_sdr audio.patch_frames=256
    launch timed_variant "pitch-sdr-lr-2e-3-stft-2048-256-s$seed" "train.seed=$seed" $then $today audio.n_fft=2048 audio.hop_length=256
  done
  wait
  for f in results/benchmarks/ablation-*/benchmark.json; do cat "$f"; echo; done
  exit 0
fi

then="train.loss=mask train.pitch_shifts= train.lr=1e-3"  # the default of this round's time, whatever today's is
launch train_variant default $then
launch train_variant paper-stft $then audio.sample_rate=8192 audio.hop_length=768
launch train_variant loss-magnitude $then train.loss=magnitude
launch train_variant norm-none $then audio.normalization=none
launch train_variant no-augmentation $then train.remix=false train.gain_range=1,1
launch train_variant lr-constant $then train.lr_schedule=constant
launch train_variant batch-32 $then train.batch_size=32
wait
launch separation_variant overlap-0 separation.patch_overlap=0
launch separation_variant overlap-0.5 separation.patch_overlap=0.5
launch separation_variant mask-power-2 separation.mask_power=2
wait
for f in results/benchmarks/ablation-*/benchmark.json; do cat "$f"; echo; done
