"""The train command: for every task, a flag the task does not read is refused, naming the flag
and the task; --helpfull lists each task's flags in a group of its own."""

import json
import subprocess
import sys

from orqa_realm.tasks.registry import TASKS
from tests.conftest import REPO_ROOT, subprocess_env

# A flag each task does not read (ICT: the issue's --retriever_workdir, once silently ignored).
UNREAD = {
    "ict": "retriever_workdir=runs/x",
    "dpr": "realm_masking=salient",
    "ance": "ict_remove_prob=0.5",
    "art": "hard_negatives_per_question=2",
    "adore": "teacher_workdir=runs/x",
    "cross_encoder": "pooling=mean",
    "distill": "cross_length=128",
    "star": "distill_loss=listwise_kl",
    "tasb": "distill_temperature=2",
    "rocketqav2": "tasb_clusters=4",
    "orqa": "hard_negatives_per_question=3",
    "realm": "eval_qa_dataset=squad:x.json",
    "lm_finetune": "art_candidates=4",
    "mlm": "realm_num_candidates=4",
    "splade": "pooling=mean",
    "deepct": "splade_query_flops=0.1",
    # The label-free pretraining tasks read only their own way of drawing pairs.
    "contriever": "spider_group_by=title",
    "simcse": "moco_queue_size=64",
    "spider": "contriever_delete_prob=0.2",
    # Each multi-vector kind reads only its own settings.
    "colbert": "block_vectors=4",
    "me_bert": "query_augmentation=false",
    "poly_encoder": "skip_punctuation=false",
}
# A flag of the index refresher, unread without --refresh_index by a task that needs no index.
REFRESHER_FLAG = "index_backend=scann"

# Parses each command line as `python -m orqa_realm.train` would and runs its main until the
# flag check refuses it (the check runs before any task is built); prints the messages.
CHECK = """
import json, sys
from absl import flags
from orqa_realm import train
from orqa_realm.core.errors import InputError
train.SETTINGS.define()
messages = []
for line in json.loads(sys.argv[1]):
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["train", *line])
  try:
    train.main()
    messages.append(None)
  except InputError as e:
    messages.append(str(e))
print(json.dumps(messages))
"""


def refusals(command_lines: list[list[str]]) -> list[str | None]:
  result = subprocess.run([sys.executable, "-c", CHECK, json.dumps(command_lines)],
                          cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


def test_every_task_refuses_a_flag_it_does_not_read():
  assert set(UNREAD) == set(TASKS)
  lines = [[f"--task={task}", "--workdir=/nonexistent/run", f"--{flag}"]
           for task, flag in UNREAD.items()]
  lines += [["--task=ict", "--workdir=/nonexistent/run", f"--{REFRESHER_FLAG}"],
            ["--task=ance", "--workdir=/nonexistent/run", "--index_storage_dtype=int8"],
            ["--task=orqa", "--workdir=/nonexistent/run", "--refresh_index"],
            # A refresher publishes the kind of index the task's checkpoints make.
            ["--task=colbert", "--workdir=/nonexistent/run", "--refresh_index",
             "--index_storage_dtype=int8"],
            ["--task=dpr", "--workdir=/nonexistent/run", "--refresh_index", "--colbert_nbits=1"]]
  messages = refusals(lines)
  for (task, flag), message in zip(UNREAD.items(), messages):
    name = flag.partition("=")[0]
    assert message is not None, task
    assert f"--{name} is not read by `train --task={task}`" in message, message
  index_flag, publishing_flag, orqa_refresh, dense_storage, colbert_storage = messages[-5:]
  assert "--index_backend is not read by `train --task=ict`" in index_flag
  assert "(it is read by: index, index publishing)" in index_flag
  # ANCE reads the refreshed index; how versions are published is read only with a refresher.
  assert "--index_storage_dtype is not read by `train --task=ance`" in publishing_flag
  assert "trains no block tower" in orqa_refresh
  assert "--index_storage_dtype is not read by `train --task=colbert`" in dense_storage
  assert "--colbert_nbits is not read by `train --task=dpr`" in colbert_storage


def test_helpfull_lists_the_flags_of_each_task_in_its_group():
  result = subprocess.run([sys.executable, "-m", "orqa_realm.train", "--helpfull"],
                          cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True,
                          timeout=300)
  groups, current = {}, None
  for line in result.stdout.splitlines():
    if line and not line.startswith(" ") and line.endswith(":"):
      current = groups.setdefault(line[:-1], set())
    elif current is not None and line.startswith("  --"):
      current.add(line.split(":")[0].strip().removeprefix("--").removeprefix("[no]"))
  assert {"task ict", "task dpr", "task ance", "task orqa", "task realm", "loop",
          "index", "index refresher"} <= set(groups)
  assert {"ict_remove_prob", "block_store", "query_length"} <= groups["task ict"]
  assert "retriever_workdir" not in groups["task ict"]
  assert {"retriever_workdir", "hard_negatives_per_question"} <= groups["task dpr"]
  assert {"realm_masking", "retriever_workdir"} <= groups["task realm"]
  assert "eval_qa_dataset" not in groups["task realm"]


def test_a_warm_start_refuses_an_architecture_other_than_its_runs(tiny_ict_run, tiny_bert_dir):
  message, = refusals([["--task=dpr", "--workdir=/nonexistent/run", f"--bert={tiny_bert_dir}",
                        f"--retriever_workdir={tiny_ict_run}", "--pooling=mean"]])
  assert f"--pooling='mean' contradicts --retriever_workdir={tiny_ict_run}" in message
  assert "whose pooling is 'pooled'" in message
