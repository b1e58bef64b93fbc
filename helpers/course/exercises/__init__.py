"""The course's exercises, one module beside each notebook, and the checks that explain mistakes.

Every notebook has three or four exercises: a small function the learner writes, at the heart of
the method the notebook teaches (*implement*), or an answer the learner finds or decides with the
course's tools (*find*, *decide*: checked against the notebook's own data). A check cell follows
each one::

    from helpers.course.exercises.nb01 import check_linearise
    linearise = check_linearise(linearise)
    shape_head = check_shape_head(shape_head, roles=roles, agreement=agreement, ...)

=============  ==============================================================================
``check``      the machinery: :class:`~.check.Exercise`, cases, mistakes, :func:`~.check.run_check`
``seeds``      seeded random inputs for the test cases, and the seed search of the *find* exercises
``nb01``       notebook 1: linearise, reassemble, variance share; find how many last layers carry half
``nb02``       notebook 2: mean ablation, zero-shot accuracy; find how few layers the prediction needs
``nb03``       notebook 3: projecting texts, a TextSpan step, a head's role and purity; find the shape head
``nb04``       notebook 4: one head's patch map, a contrastive head map; find the best single layer
``nb05``       notebook 5: choosing the spurious heads, worst-group accuracy; decide which heads to ablate
``nb06``       notebook 6: post-processing, threshold at the mean, the dataset's mIoU; find the best layers
``nb07``       notebook 7: a neuron's effect, neurons about a value, rank-1 ablation; find the neuron pushing A to B
=============  ==============================================================================

The references reuse the helpers' own code where it exists (``accuracy``,
``dominant_property``, ``rank_heads``/``choose_heads``, ``group_metrics``, ``postprocess``,
``threshold_map``, ``SegmentationScores``, the decomposition's per-token contraction); the
others are plain formulas that ``tests/test_exercises.py`` checks against the helpers.
Importing this package registers every exercise in :data:`EXERCISES` (``"1.1"`` is notebook
1's first exercise).
"""

from . import nb01, nb02, nb03, nb04, nb05, nb06, nb07  # noqa: F401  (each registers its exercises)
from .check import EXERCISES, Checked, CheckResult, Exercise, run_check

__all__ = ["EXERCISES", "Checked", "CheckResult", "Exercise", "run_check", "MODULES", "check_function"]

MODULES = {1: nb01, 2: nb02, 3: nb03, 4: nb04, 5: nb05, 6: nb06, 7: nb07}
"""The exercise module of each notebook."""


def check_function(exercise: str):  # noqa: ANN201
    """The ``check_*`` function of an exercise (``"2.1"`` -> ``nb02.check_mean_ablate``)."""
    ex = EXERCISES[exercise]
    return getattr(MODULES[int(exercise.split(".")[0])], f"check_{ex.name}")
