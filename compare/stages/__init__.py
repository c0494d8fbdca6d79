"""Training and data stages, one module each; `RUNNERS` maps a stage kind to the function that runs it.

Every runner has the signature `run(params, out, inputs, ctx)`: its settings, the folder to write into,
the folders of its input stages by name, and run-wide context. Modules import TRL only inside runners.
"""

from compare.stages import base, data, dpo, evaluate, ppo, rloo, rm, sft

RUNNERS = {
    "base": base.run,
    "demos": data.run_demos,
    "comparisons": data.run_comparisons,
    "sft": sft.run_sft,
    "preferred_ft": sft.run_preferred_ft,
    "dpo": dpo.run,
    "rm": rm.run,
    "ppo": ppo.run,
    "rloo": rloo.run,
    "eval": evaluate.run,
    # a dataset task's judge (gold reward model) trained on a held-out split: its pairs, then rm's training
    "judge_data": data.run_judge_data,
    "judge": rm.run,
}
