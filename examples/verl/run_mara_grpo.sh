#!/usr/bin/env bash
# A small GRPO run of the "1 or 2" task with MARA in verl, on one GPU, offline (tiny Llama built locally).
# Needs verl's GPU stack and mara-rl in one environment:
#   pip install "verl[vllm]==0.9.1" && pip install -e .
# Usage: bash examples/verl/run_mara_grpo.sh [OUT] [KL]   (KL: reverse | forward; default reverse)
set -euo pipefail
OUT=${1:-runs/verl-one-or-two}
KL=${2:-reverse}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
python "$HERE/prepare_tiny.py" "$OUT"

if [ "$KL" = forward ]; then
    KL_ARGS=(actor_rollout_ref.actor.use_kl_loss=True actor_rollout_ref.actor.kl_loss_coef=0.01
             algorithm.use_kl_in_reward=False +algorithm.mara.kl=forward)
else
    KL_ARGS=(algorithm.use_kl_in_reward=True algorithm.kl_ctrl.kl_coef=0.01 actor_rollout_ref.actor.use_kl_loss=False)
fi

python -m verl.trainer.main_ppo \
    trainer.v1.trainer_mode=mara_sync \
    +algorithm.mara.tau=0.5 \
    "${KL_ARGS[@]}" \
    algorithm.adv_estimator=grpo \
    algorithm.norm_adv_by_std_in_grpo=False \
    data.train_files="$OUT/train.parquet" \
    data.val_files="$OUT/val.parquet" \
    data.train_batch_size=16 \
    data.max_prompt_length=32 \
    data.max_response_length=4 \
    reward.custom_reward_function.path="$HERE/reward.py" \
    actor_rollout_ref.model.path="$OUT/model" \
    actor_rollout_ref.actor.optim.lr=1e-4 \
    actor_rollout_ref.actor.ppo_mini_batch_size=16 \
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=16 \
    actor_rollout_ref.rollout.name=vllm \
    actor_rollout_ref.rollout.n=8 \
    actor_rollout_ref.rollout.tensor_model_parallel_size=1 \
    actor_rollout_ref.rollout.gpu_memory_utilization=0.3 \
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=16 \
    actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=16 \
    trainer.n_gpus_per_node=1 \
    trainer.nnodes=1 \
    trainer.logger='["console"]' \
    trainer.total_training_steps=20 \
    trainer.save_freq=-1 \
    trainer.test_freq=-1 \
    trainer.val_before_train=False \
    trainer.default_local_dir="$OUT/checkpoints"
