"""The search: Optuna study, per-trial processes, objective, and the KerasTuner-style hyperparameter adapter."""
