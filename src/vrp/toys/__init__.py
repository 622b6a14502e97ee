"""The shipped toy VLMs: building them, training them on ShapesWorld, their recipes and evaluation.

- :mod:`vrp.toys.build`: tiny random-init models of the real HF classes, with real processors;
- :mod:`vrp.toys.tasks`: the training tasks (ShapesWorld's families plus auxiliary ones);
- :mod:`vrp.toys.supervision`: training-only per-patch heads and attention supervision;
- :mod:`vrp.toys.forcing`: teacher-forced batches, the per-example loss and the held-out evaluation;
- :mod:`vrp.toys.config`: the training configuration (``TrainConfig``);
- :mod:`vrp.toys.train`: the training loop, in named parts;
- :mod:`vrp.toys.recipes`: the recipe that produced the shipped checkpoints;
- :mod:`vrp.toys.evaluate`: greedy accuracy of a checkpoint through ``vrp run``;
- ``checkpoints/``: the shipped ``toy-llava``, ``toy-paligemma`` and ``toy-qwen2vl``.

This package sits above ``runs`` (it uses models, capture and the run pipeline); nothing
below it imports it.
"""
