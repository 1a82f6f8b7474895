"""Ray Train `train_loop_per_worker` functions (teacher training and distillation: one loop)."""
