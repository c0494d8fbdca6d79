"""The lab's exercise checks (compare/teaching.py) and its two notebooks' single source (notebooks/build.py).

Each check must pass a right implementation written independently of the reference, fail a wrong one with
an AssertionError that says what differs, and return False (not raise) while the exercise is a stub.
"""

import importlib.util
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from compare import teaching

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


# --- the references, against hand-computed values ---------------------------------------------------


def test_bradley_terry_loss_by_hand():
    loss = teaching.bradley_terry_loss(torch.tensor([1.2, 0.3, -0.5]), torch.tensor([0.2, 0.8, -0.5]))
    assert loss.item() == pytest.approx(
        (math.log1p(math.exp(-1)) + math.log1p(math.exp(0.5)) + math.log(2)) / 3
    )


def test_dpo_loss_by_hand():
    # beta 0.1; chosen raised by 2 nats, rejected lowered by 2: margin 4, loss log(1 + e^-0.4)
    t = torch.tensor
    assert teaching.dpo_loss(t([-12.0]), t([-15.0]), t([-14.0]), t([-13.0]), 0.1).item() == pytest.approx(
        math.log1p(math.exp(-0.4))
    )
    same = t([-3.0, -7.0])  # pi = pi_ref: log 2 whatever the pair
    assert teaching.dpo_loss(same, same + 1, same, same + 1, 0.5).item() == pytest.approx(math.log(2))


def test_group_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.2, 0.6, -0.2, 0.7, 0.7, 0.7, 0.7])
    rloo = teaching.rloo_advantages(rewards, k=4)
    # r_1's baseline is (0.2 + 0.6 - 0.2) / 3 = 0.2; in general k/(k-1) times the mean-centred reward
    assert rloo.tolist() == pytest.approx([0.8, -0.8 / 3, 0.8 / 3, -0.8, 0, 0, 0, 0], abs=1e-6)
    std = math.sqrt((0.36 + 0.04 + 0.04 + 0.36) / 3)  # Bessel-corrected
    grpo = teaching.grpo_advantages(rewards, k=4)
    assert grpo[:4].tolist() == pytest.approx([x / (std + 1e-4) for x in (0.6, -0.2, 0.2, -0.6)], abs=1e-5)
    assert grpo[4:].tolist() == [0, 0, 0, 0]  # a group without spread teaches nothing
    assert teaching.grpo_advantages(rewards, k=4, scale=False)[:4].tolist() == pytest.approx(
        [0.6, -0.2, 0.2, -0.6], abs=1e-6
    )


# --- each check: a right answer passes, wrong ones fail and say why, a stub is "not written yet" ----------


def bt_right(r_chosen, r_rejected):
    return torch.stack([torch.log1p(torch.exp(-(c - r))) for c, r in zip(r_chosen, r_rejected)]).mean()


def gae_right(rewards, values, mask, gamma, lam):  # the textbook loop, one row at a time
    advantages, returns = torch.zeros_like(rewards), torch.zeros_like(rewards)
    for b in range(rewards.size(0)):
        n = int(mask[b].sum())
        running = 0.0
        for t in reversed(range(n)):
            next_value = values[b, t + 1] if t + 1 < n else 0.0
            running = rewards[b, t] + gamma * next_value - values[b, t] + gamma * lam * running
            advantages[b, t] = running
            returns[b, t] = running + values[b, t]
    return advantages, returns


def dpo_right(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
    chosen, rejected = beta * (policy_chosen - ref_chosen), beta * (policy_rejected - ref_rejected)
    return torch.log1p(torch.exp(rejected - chosen)).mean()


def bon_right(scores, n):
    kept = []
    for start in range(0, len(scores), n):
        best = start
        for i in range(start + 1, start + n):
            if scores[i] > scores[best]:
                best = i
        kept.append(best)
    return kept


def stub(*_args):
    raise NotImplementedError


@pytest.mark.parametrize(
    "check, right",
    [
        (teaching.check_bradley_terry_loss, bt_right),
        (teaching.check_gae, gae_right),
        (teaching.check_dpo_loss, dpo_right),
        (teaching.check_best_of_n, bon_right),
    ],
    ids=["bradley_terry", "gae", "dpo", "best_of_n"],
)
def test_check_passes_a_right_answer_and_waits_for_a_stub(check, right, capsys):
    assert check(right) is True
    assert "agrees with" in capsys.readouterr().out
    assert check(stub) is False
    assert "not written yet" in capsys.readouterr().out


WRONG = {
    "bt swapped": (teaching.check_bradley_terry_loss, lambda c, r: -F.logsigmoid(r - c).mean(), "swapped"),
    "bt summed": (teaching.check_bradley_terry_loss, lambda c, r: -F.logsigmoid(c - r).sum(), "summed"),
    "bt no log": (
        teaching.check_bradley_terry_loss,
        lambda c, r: -torch.sigmoid(c - r).mean(),
        "without the log",
    ),
    "gae no lambda": (
        teaching.check_gae,
        lambda r, v, m, g, lam: gae_right(r, v, m, g, 1.0),
        "λ is left out",
    ),
    "gae returns": (
        teaching.check_gae,
        lambda r, v, m, g, lam: (gae_right(r, v, m, g, lam)[0],) * 2,
        "returns",
    ),
    "gae ignores mask": (
        teaching.check_gae,
        lambda r, v, m, g, lam: gae_right(r, v, torch.ones_like(m), g, lam),
        "mask",
    ),
    "gae wrong shape": (teaching.check_gae, lambda r, v, m, g, lam: (r[0], r[0]), "shape"),
    "dpo no beta": (teaching.check_dpo_loss, lambda pc, pr, rc, rr, b: dpo_right(pc, pr, rc, rr, 1.0), "β"),
    "dpo no reference": (
        teaching.check_dpo_loss,
        lambda pc, pr, rc, rr, b: dpo_right(pc, pr, 0 * rc, 0 * rr, b),
        "reference is left out",
    ),
    "dpo swapped": (
        teaching.check_dpo_loss,
        lambda pc, pr, rc, rr, b: dpo_right(pr, pc, rr, rc, b),
        "swapped",
    ),
    "bon last on ties": (
        teaching.check_best_of_n,
        lambda s, n: [max(range(g, g + n), key=lambda i: (s[i], i)) for g in range(0, len(s), n)],
        "keep the first",
    ),
    "bon within group": (
        teaching.check_best_of_n,
        lambda s, n: [i - g for i, g in zip(bon_right(s, n), range(0, len(s), n))],
        "position inside each group",
    ),
    "bon lowest": (
        teaching.check_best_of_n,
        lambda s, n: [min(range(g, g + n), key=lambda i: s[i]) for g in range(0, len(s), n)],
        "expected",
    ),
}


@pytest.mark.parametrize("name", WRONG)
def test_check_fails_a_wrong_answer_and_says_what_differs(name):
    check, wrong, says = WRONG[name]
    with pytest.raises(AssertionError, match=re.escape(says)) as failure:
        check(wrong)
    assert "expected" in str(failure.value)


# --- the two notebooks come from one source ------------------------------------------------------------


@pytest.fixture(scope="module")
def build():
    pytest.importorskip("nbformat", reason="the notebooks' builder needs nbformat (the dev extra)")
    spec = importlib.util.spec_from_file_location("notebooks_build", NOTEBOOKS / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_notebooks_are_a_fresh_build(build):
    for version, path in build.VERSIONS.items():
        assert path.read_text() == build.text(version), f"{path.name}: run python notebooks/build.py"
    assert build.main(["--check"]) == 0


def test_students_get_stubs_and_the_teacher_gets_every_answer(build):
    student, teacher = build.build("student"), build.build("teacher")

    def sources(nb, kind):
        return [c.source for c in nb.cells if c.cell_type == kind]

    student_code, teacher_code = "\n".join(sources(student, "code")), "\n".join(sources(teacher, "code"))
    exercises = re.findall(r"^def (\w+)\(", student_code, re.M)
    stubs = student_code.count(build.STUB)
    assert stubs >= 4 and "SOLUTION" not in student_code + teacher_code and build.STUB not in teacher_code
    for check in ("bradley_terry_loss", "gae", "dpo_loss", "best_of_n"):
        assert check in exercises and f"teaching.check_{check}({check})" in student_code
    # every question the students are asked has an answer cell in the teacher's version, and only there
    asked = sum(len(re.findall(r"\*\*(Predict\.|Question \d)", s)) for s in sources(student, "markdown"))
    answers = [s for s in sources(teacher, "markdown") if s.startswith("*Answer")]
    assert asked >= 6 and len(answers) == asked
    assert not any(s.startswith("*Answer") for s in sources(student, "markdown"))


def test_builder_rejects_a_broken_source(build):
    with pytest.raises(ValueError, match="BEGIN SOLUTION without"):
        build.build("student", "# %%\ndef f():\n    # BEGIN SOLUTION\n    return 1\n")
    with pytest.raises(ValueError, match="unknown cell header"):
        build.build("student", "# %% [raw]\nx = 1\n")
