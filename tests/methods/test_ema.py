"""The momentum teachers' EMA (``wsss.methods.ema``): SeCo's local teacher and the DeepLab stage's mean teacher."""

import torch

from wsss.methods.ema import ema_update, frozen_copy, mean_teacher_decay


def test_ema_update_and_frozen_copy():
    student = torch.nn.Linear(3, 2)
    teacher = frozen_copy(student)
    assert all(not p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        student.weight.add_(1.0)
    before = teacher.weight.clone()
    ema_update(teacher, student, 0.9)
    assert torch.allclose(teacher.weight, 0.9 * before + 0.1 * student.weight)


def test_ema_update_dispatches_two_operators_whatever_the_parameters():
    """The teacher's update is two fused operators (multiply all, add all), not one or more per parameter: each
    dispatched operator costs a GPU kernel launch or the host's time (a detach per parameter was one more
    each)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
            Count.n += 1
            return func(*args, **(kwargs or {}))

    student = torch.nn.Sequential(*[torch.nn.Linear(3, 3) for _ in range(10)])  # 20 parameters
    teacher = frozen_copy(student)
    expected = [0.9 * t + 0.1 * s for t, s in zip(teacher.parameters(), student.parameters(), strict=True)]
    with Count():
        ema_update(teacher, student, 0.9)
    assert Count.n == 2
    for t, e in zip(teacher.parameters(), expected, strict=True):
        assert torch.allclose(t, e)


def test_ema_update_of_buffers_averages_statistics_and_copies_counters():
    """``buffers=True`` (the DeepLab stage's teacher): BatchNorm's running statistics are averaged as the parameters,
    its batch counter copied; without it (SeCo) the buffers stay as they were."""
    student = torch.nn.BatchNorm1d(3)
    teacher = frozen_copy(student)
    student.train()(torch.randn(8, 3) * 3 + 2)  # moves the running statistics and counts one batch
    mean0, var0 = teacher.running_mean.clone(), teacher.running_var.clone()
    ema_update(teacher, student, 0.9)
    assert torch.equal(teacher.running_mean, mean0) and int(teacher.num_batches_tracked) == 0
    ema_update(teacher, student, 0.9, buffers=True)
    assert torch.allclose(teacher.running_mean, 0.9 * mean0 + 0.1 * student.running_mean)
    assert torch.allclose(teacher.running_var, 0.9 * var0 + 0.1 * student.running_var)
    assert int(teacher.num_batches_tracked) == int(student.num_batches_tracked) == 1


def test_mean_teacher_decay_ramps_up_to_the_setting():
    """Tarvainen and Valpola's ramp: 1 - 1 / (n + 1) after n steps (1/2, 2/3, ...) until it reaches the decay."""
    assert [mean_teacher_decay(0.99, n) for n in (1, 2, 3)] == [0.5, 1 - 1 / 3, 0.75]
    assert mean_teacher_decay(0.99, 99) == 0.99 and mean_teacher_decay(0.99, 10_000) == 0.99
    assert mean_teacher_decay(0.0, 5) == 0.0  # decay 0: the teacher is the student
