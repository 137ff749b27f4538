"""Resuming a grown model with `keras.callbacks.BackupAndRestore`.

BackupAndRestore saves the model's weights (and optimizer state) while it
trains and loads them when the same script is started again after a crash.
If the model grew in between, the fresh model of the restarted script is
smaller than the backup. `GrowModel` therefore keeps a *growth log* beside the
backup (``keras_net2net_growth.json`` in the backup directory): the list of
growth events applied so far, each with the *signature* of the model after it
(the shapes of its weights). On restart it reads the shapes stored in the
backup's weights file, finds the event after which the model had exactly
those shapes, and applies the events up to it again before BackupAndRestore
loads the weights. The log is written right after each growth event, before
the next backup can contain grown weights, so a backup always matches an
entry of the log, whenever the process died.
"""

import json
import os

import h5py

LOG_NAME = "keras_net2net_growth.json"
FORMAT = 1


def signature(model):
    """Sorted shapes of ``model``'s weights (what a weights file stores)."""
    return sorted([list(int(d) for d in v.shape) for v in model.weights])


def file_signature(path):
    """Sorted shapes of the layer weights stored in a ``.weights.h5`` file."""
    shapes = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and name.startswith("layers/"):
            shapes.append([int(d) for d in obj.shape])

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return sorted(shapes)


class GrowthLog:
    """The growth log of one backup directory.

    Args:
        backup_dir: the BackupAndRestore callback's directory.
        schedule: one description per scheduled event (checked on resume).
    """

    def __init__(self, backup_dir, schedule):
        self.path = os.path.join(backup_dir, LOG_NAME)
        self.schedule = list(schedule)
        self.stages = []
        self.records = []

    def start(self, model):
        """Begin a log for ``model`` as it is now (no event applied)."""
        self.stages = [{"events": [], "signature": signature(model)}]
        self.records = []

    def add(self, events, model, record):
        self.stages.append({"events": list(events), "signature": signature(model)})
        self.records.append(record)
        self.write()

    def write(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        data = {
            "format": FORMAT,
            "schedule": self.schedule,
            "stages": self.stages,
            "records": self.records,
        }
        temporary = self.path + ".tmp"
        with open(temporary, "w") as f:
            json.dump(data, f)
        os.replace(temporary, self.path)

    def read(self):
        """Load the log if it exists; returns False if there is none."""
        if not os.path.exists(self.path):
            return False
        with open(self.path) as f:
            data = json.load(f)
        if data.get("format") != FORMAT:
            raise ValueError(
                f"GrowModel: the growth log {self.path} has an unknown format "
                f"{data.get('format')!r}; delete the backup directory to start over."
            )
        if data["schedule"] != self.schedule:
            raise ValueError(
                f"GrowModel: the backup in {os.path.dirname(self.path)} was made "
                "by a GrowModel with a different schedule. Received schedule: "
                f"{self.schedule}; the backup's: {data['schedule']}. Resume with "
                "the same schedule, or delete the backup directory to start over."
            )
        self.stages = data["stages"]
        self.records = data["records"]
        return True

    def stage_for(self, weights_paths):
        """Index of the logged stage that the backup's weights file matches.

        Args:
            weights_paths: the backup's weights file, then its previous copy
                (BackupAndRestore falls back to it if the first is unreadable).

        Returns:
            The stage index, or None if there is no weights file.
        """
        for path in weights_paths:
            if not path or not os.path.exists(path):
                continue
            try:
                stored = file_signature(path)
            except OSError:
                continue  # unreadable: BackupAndRestore falls back too
            for index in range(len(self.stages) - 1, -1, -1):
                if self.stages[index]["signature"] == stored:
                    return index
            raise ValueError(
                f"GrowModel: the backup weights in {path} match no model state "
                f"recorded in the growth log {self.path}; it was not written by "
                "this training run. Delete the backup directory to start over."
            )
        return None

    def truncate(self, index):
        """Forget the stages after ``index`` (they were never backed up)."""
        self.stages = self.stages[: index + 1]
        self.records = self.records[:index]
        self.write()
