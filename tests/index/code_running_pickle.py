"""A pickle whose loading runs code (it creates a file): the proof, in the ScaNN tests, that
loading an index never unpickles."""

import pickle


class RunsCode:
  """Unpickling this creates the file `marker`."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (open, (self.marker, "w"))


def code_running_pickle(marker) -> bytes:
  return pickle.dumps(RunsCode(str(marker)))
