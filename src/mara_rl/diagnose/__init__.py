"""``mara diagnose``: the exact target of a KL-regularised objective over the answers a model produced.

Read rollouts (:func:`read_rollouts`), group each prompt's completions into answer classes
(:func:`answer_classes`), and compute per prompt the vanilla and the MARA target with the core's
closed forms (:func:`diagnose`). Needs pandas (extra ``[dev]`` or ``[chem]``).
"""

from mara_rl.diagnose.classes import AnswerClasses, answer_classes
from mara_rl.diagnose.diagnosis import Diagnosis, diagnose
from mara_rl.diagnose.reading import check_rollouts, read_rollouts

__all__ = ["AnswerClasses", "Diagnosis", "answer_classes", "check_rollouts", "diagnose", "read_rollouts"]
