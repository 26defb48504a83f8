"""RAIL on the embedded_cls benchmark: accuracy and cost of the primal form by expansion width, and of the dual form.

Usage:
    python benchmarks/rail_width.py [--widths 250,500,1000,2000,4000] [--dual] [--threads 1]

The frozen embedded CLIP encodes every task's training and test images once; then, for each form, the method
(``vlcl.methods.rail``) learns the six tasks in order and is scored after the last one, exactly as the
evaluator scores it: per task among its own classes (Last) and task-agnostically among the union of every
task's classes (task-agnostic Last). Printed per form: the fitting time of all six tasks, the size of the state
and the two accuracies. No run directory is written; ``vlcl run ... method.name=rail`` gives every stage.
"""

from __future__ import annotations

import argparse
import time

import torch

from vlcl.data.benchmarks.embedded_cls import build_embedded_cls
from vlcl.methods import RunContext, Stage, create_method
from vlcl.metrics import logit_accuracy, union_label_space, zeroshot_classifier
from vlcl.models import load_clip
from vlcl.models.encode import encode_texts


def state_megabytes(state) -> float:
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size() / 2**20
    if isinstance(state, dict):
        return sum(state_megabytes(v) for v in state.values())
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="250,500,1000,2000,4000")
    parser.add_argument("--dual", action="store_true", help="also the dual form")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bundle = load_clip("embedded")
    benchmark = build_embedded_cls()
    names = benchmark.task_names
    context = RunContext(task_names=names, seed=0, bundle=bundle)
    encoder = create_method("rail", {"form": "dual"})
    encoder.setup(bundle.model, context)
    started = time.perf_counter()
    train = [encoder.encode_images(t.train.images) for t in benchmark.tasks]
    test = [encoder.encode_images(t.test.images) for t in benchmark.tasks]
    keys = [[tuple(p) for p in t.test.prompts()] for t in benchmark.tasks]
    classifiers = []
    for task_keys in keys:
        prompts = encode_texts(bundle.model, bundle.tokenizer, [p for key in task_keys for p in key])
        classifiers.append(zeroshot_classifier(prompts.view(len(task_keys), len(task_keys[0]), -1)))
    union, maps = union_label_space(classifiers, keys)
    union_keys = list(dict.fromkeys(k for task_keys in keys for k in task_keys))
    print(f"encoded {sum(len(f) for f in train)} training and {sum(len(f) for f in test)} test images in {time.perf_counter() - started:.1f} s")

    forms = [{"form": "primal", "hidden_dim": int(w)} for w in args.widths.split(",") if w]
    forms += [{"form": "dual"}] if args.dual else []
    print("| form | fit s (6 tasks) | state MB | Last | task-agnostic Last |")
    print("|---|---|---|---|---|")
    for options in forms:
        method = create_method("rail", options)
        method.setup(bundle.model, context)
        started = time.perf_counter()
        for index, task in enumerate(benchmark.tasks):
            data = task.train.with_prompts("first")
            columns = torch.tensor([method._column(tuple(p)) for p in data.class_prompts])
            method.learn(train[index], columns[data.labels])
            method.end_task(Stage(index, task.name, (index,)))
        seconds = time.perf_counter() - started
        last = [
            logit_accuracy(method.classification_logits(f, c, k), t.test.labels)["top1"]
            for f, c, k, t in zip(test, classifiers, keys, benchmark.tasks)
        ]
        agnostic = [
            logit_accuracy(method.classification_logits(f, union, union_keys), maps[i][t.test.labels])["top1"]
            for i, (f, t) in enumerate(zip(test, benchmark.tasks))
        ]
        label = options["form"] + (f" H={options['hidden_dim']}" if "hidden_dim" in options else "")
        size = state_megabytes(method.state_dict())
        print(f"| {label} | {seconds:.1f} | {size:.0f} | {sum(last) / len(last):.1f} | {sum(agnostic) / len(agnostic):.1f} |", flush=True)


if __name__ == "__main__":
    main()
