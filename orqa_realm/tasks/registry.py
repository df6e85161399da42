"""The tasks `python -m orqa_realm.train --task=NAME` can train, by name."""

from __future__ import annotations

from orqa_realm.tasks.adore import ADORETask
from orqa_realm.tasks.ance import ANCETask
from orqa_realm.tasks.art import ARTTask
from orqa_realm.tasks.base import Task
from orqa_realm.tasks.contrastive import ContrieverTask, SimCSETask
from orqa_realm.tasks.cross_encoder import CrossEncoderTask
from orqa_realm.tasks.deepct import DeepCTTask
from orqa_realm.tasks.distill import DistillTask
from orqa_realm.tasks.dpr import DPRTask
from orqa_realm.tasks.ict import ICTTask
from orqa_realm.tasks.late_interaction import ColBERTTask, MEBERTTask, PolyEncoderTask
from orqa_realm.tasks.lm_finetune import LMFinetuneTask
from orqa_realm.tasks.mlm import MLMTask
from orqa_realm.tasks.orqa import ORQATask
from orqa_realm.tasks.realm import REALMTask
from orqa_realm.tasks.rocketqa import RocketQAv2Task
from orqa_realm.tasks.splade import SpladeTask
from orqa_realm.tasks.spider import SpiderTask
from orqa_realm.tasks.star import STARTask
from orqa_realm.tasks.tasb import TASBTask

TASKS: dict[str, type[Task]] = {
    task.name: task for task in (ADORETask, ANCETask, ARTTask, ColBERTTask, ContrieverTask,
                                 CrossEncoderTask, DeepCTTask, DistillTask, DPRTask, ICTTask,
                                 LMFinetuneTask, MEBERTTask, MLMTask, ORQATask, PolyEncoderTask,
                                 REALMTask, RocketQAv2Task, SimCSETask, SpiderTask, SpladeTask,
                                 STARTask, TASBTask)}
