"""The training program: one program for tuning and for final training (``python -m dogbreed.train``).

Follows torchvision's reference trainer, one concern a module, read top-down:

- :mod:`.args`: the flags (``get_args_parser``) and the checks that need no data;
- :mod:`.config`: the run configuration, resolved once from the flags and the environment, frozen;
- :mod:`.loop`: one epoch (``train_one_epoch``) and one evaluation (``evaluate``);
- :mod:`.setup`: data, model, precision, loaders, optimizer: what the loop runs on;
- :mod:`.recipe`: the linear probe, the epochs of fine-tuning, the weight mixes, what is kept;
- :mod:`.resume`: checkpoints and resuming from them;
- :mod:`.artifacts`: the test split, model.pth, metrics.json and the per-class reports;
- :mod:`.entry`: ``main`` and the process entry (one process, one per GPU, DDP) with its failure file;
- :mod:`.hooks`: the Debugger and profiler hooks.

This file imports nothing: ``training.hooks`` is read without loading torch.
"""
