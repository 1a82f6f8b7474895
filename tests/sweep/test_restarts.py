"""Which failures Tune's restart should train again: a lost worker yes, an error of the training
code no; a refused restart reports the error of the attempt that failed."""

from __future__ import annotations

import pickle

from ray.exceptions import ActorDiedError, RayTaskError
from ray.train.v2.api.exceptions import ControllerError, WorkerGroupError

from hwd_tune.sweep.restarts import TrialNotRestarted
from hwd_tune.sweep.summary import failure_reason
from trainables.launch import failed_by_training_code

CODE_ERROR = "RuntimeError: failing on purpose at iteration 3 (loop_config fail_at_iteration test hook)"


def test_an_error_of_the_training_code_is_told_from_a_lost_worker():
    code = WorkerGroupError("rank 0", {0: RuntimeError("failing on purpose")})
    lost = WorkerGroupError("rank 1 died", {1: ActorDiedError()})
    lost_and_collateral = WorkerGroupError("both", {0: RuntimeError("Connection reset by peer"), 1: ActorDiedError()})
    assert failed_by_training_code(code)
    assert not failed_by_training_code(lost)
    assert not failed_by_training_code(lost_and_collateral)  # the survivor's error follows from the loss
    assert not failed_by_training_code(ControllerError(RuntimeError("controller lost")))
    assert not failed_by_training_code(ConnectionError("MLflow did not answer"))  # may pass: restarted


def test_a_refused_restart_reports_the_error_of_the_attempt_that_failed():
    earlier = f"Training failed due to worker errors:\n[Rank 0]:\nTraceback (most recent call last):\n{CODE_ERROR}\n"
    refused = pickle.loads(pickle.dumps(TrialNotRestarted(earlier)))  # as Ray ships it to the driver
    assert failure_reason(refused) == CODE_ERROR
    wrapped = RayTaskError("train", "Traceback ...", refused)  # what Tune keeps as the trial's error
    assert failure_reason(wrapped) == CODE_ERROR
    assert failure_reason(wrapped.as_instanceof_cause()) == CODE_ERROR
