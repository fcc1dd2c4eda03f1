"""One trial's lifecycle, from the task the study process hands over to the outcome it gets back.

=====================  ======================================================================
``task.py``            what crosses the process boundary: :class:`TrialTask`, :class:`TrialOutcome`
``launcher.py``        the trial processes the study process starts ahead and supervises
``process.py``         the trial's process (``python -m clot_hpo.search.trial.process``)
``phases.py``          before training: the Optuna trial, the model, the VRAM plan, the data
``epochs.py``          while training: each epoch reported (and pruned), checkpoints, replay
``evaluation.py``      after training: the evaluation, the predictions, the model, ledgered
``cv.py``              a cross-validated trial: k folds, then the refit that is kept
``resume.py``          resuming a retried trial from its checkpoint; stopping on SIGTERM
``oom_retry.py``       a trial that ran out of GPU memory, retried once at half the batch
``timing.py``          where a trial's time goes, one figure per phase
=====================  ======================================================================

Nothing is imported here: the trial process imports only the modules it needs.
"""
