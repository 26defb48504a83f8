"""SIT: Symmetric Image-Text tuning (Wang et al. 2024, "CLIP model is an Efficient Online Lifelong Learner").

LoRA on the attention of both towers (q, k, v and out projections, rank 4, lora_alpha 1, PEFT) on a frozen
CLIP, trained with a *symmetric* cross-entropy: a batch of images x_1..x_B with labels y_1..y_B competes only
among the classes present in the batch. With C_B = {y_1, ..., y_B} (the distinct classes of the batch, in
increasing order) and pi: C_B -> {0, ..., |C_B| - 1} its re-indexing,

    logits_ic = s * cos(f(x_i), g(prompt_c)),   c in C_B only
    L_SIT     = 1/B sum_i CE(logits_i, pi(y_i))

f the image tower, g the text tower (a class's text: the mean of its prompts' normalised embeddings), s the
CLIP temperature (frozen, capped at 100), CE with ``train.label_smoothing``. Every class text in the loss
is the positive of some image of the batch, so images and texts play symmetric roles; old classes absent
from the batch get no negative gradient. ``visible_classes=all`` is the asymmetric baseline:

    L_all = 1/B sum_i CE(s * cos(f(x_i), g(prompt_c)) for c in C, y_i)

over the batch's whole label space C - on a stream every class seen so far (the class prompts of a stream
batch), in task mode the task's classes: the default classification loss.

With a replay memory (``memory_size`` > 0, streams only), a reservoir sample of the stream's positions is kept
(observe_batch, the authors' update_memory), each step appends M = B - B // 2 memory samples to the batch's B,
and the loss falls back to ``all`` as the authors' code does. A caption batch (image-caption tasks) keeps the
CLIP loss, which is already symmetric over the batch's captions.

``tuning=adapter`` replaces the LoRA with the authors' other module (their adapter-clip): one bottleneck adapter
per block of both towers, a(h) = h + 0.1 up(dropout_0.1(relu(down(h)))) with 64 hidden units, added to the
attention and to the MLP outputs, up-projection zero at the start (vlcl.models.adapters); only the adapters
train. It does not fold into CLIP weights: the evaluated model carries the adapters, the stage checkpoint's
model/ is the frozen CLIP beneath them (evaluation_beyond_model says so), the adapters are the method state.

One LoRA for the whole run, as the authors keep one model through their stream: on a stream it is merged into
the weights at its end; in task mode it is kept across tasks (never restarted), each stage evaluating and
saving a merged copy, and the last stage merging it in place. docs/methods/sit.md names every deviation from
the authors' code (Debatrix/LifeLong-CLIP at bf20b82).
"""

from __future__ import annotations

import copy
import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from transformers import CLIPModel

from vlcl.data.benchmark import CaptionedImages
from vlcl.losses import LossOutput, class_prompt_loss
from vlcl.methods.base import Method, MethodOptions, Stage
from vlcl.methods.parts.memory import StreamMemory
from vlcl.methods.registry import register_method
from vlcl.models.adapters import add_adapters, adapter_state_dict, encoder_layers, has_adapters, load_adapter_state_dict
from vlcl.models.encode import class_embeddings, image_embeddings, text_embeddings
from vlcl.models.lora import add_lora, check_target_modules, lora_parameters
from vlcl.seeds import sit_seed
from vlcl.settings import Batch
from vlcl.settings.classification import ClassBatch

TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "out_proj")
"""The attention projections of both towers (the authors' LoRA on nn.MultiheadAttention's in_proj and out_proj)."""


LORA_OPTIONS = ("rank", "lora_alpha", "lora_b_init")
ADAPTER_OPTIONS = ("adapter_bottleneck", "adapter_scale", "adapter_dropout")


class SITOptions(MethodOptions):
    tuning: Literal["lora", "adapter"] = "lora"
    """The tuning module on the frozen CLIP: ``lora`` (the authors' lora-clip) or ``adapter`` (their adapter-clip:
    a bottleneck MLP adapter in every block of both towers, vlcl.models.adapters)."""
    rank: int = Field(4, ge=1)
    """LoRA rank r (the authors' lora_r)."""
    lora_alpha: float = Field(1.0, gt=0)
    """LoRA scaling numerator: the update is (lora_alpha / r) B A (the authors' lora_alpha)."""
    lora_b_init: Literal["zero", "xavier"] = "zero"
    """``zero``: q/k/v LoRA B starts at 0, so the model starts as the pre-trained one; ``xavier``: the authors'
    init of the fused in_proj LoRA (A and B Xavier-uniform, A shared by q, k, v at the start)."""
    adapter_bottleneck: int = Field(64, ge=1)
    """Hidden units of each adapter (the authors' ``ffn_num``); ``tuning=adapter`` only."""
    adapter_scale: float = Field(0.1, gt=0)
    """s in h + s * up(relu(down(h))) (the authors' ``adapter_scalar``); ``tuning=adapter`` only."""
    adapter_dropout: float = Field(0.1, ge=0, lt=1)
    """Dropout on the adapter's hidden units in training (the authors' 0.1); ``tuning=adapter`` only."""
    visible_classes: Literal["batch", "all"] = "batch"
    """``batch``: the symmetric loss over the classes in the batch (SIT); ``all``: over the batch's label space."""
    ce_on_probabilities: bool = False
    """The authors' quirk: cross-entropy taken on the softmax probabilities instead of the logits."""
    memory_size: int = Field(0, ge=0)
    """Stream samples kept in a reservoir memory (0: none); with a memory the loss is ``all``, as the authors'."""

    @model_validator(mode="after")
    def _one_tuning_module(self) -> "SITOptions":
        """The other module's options keep their defaults: a value there would be silently unused."""
        unused = ADAPTER_OPTIONS if self.tuning == "lora" else LORA_OPTIONS
        changed = [k for k in unused if getattr(self, k) != type(self).model_fields[k].default]
        if changed:
            other = "adapter" if self.tuning == "lora" else "LoRA"
            raise ValueError(f"{', '.join(changed)}: not used with tuning={self.tuning} (the {other} options)")
        return self


@register_method
class SIT(Method):
    name = "sit"
    description = (
        "LoRA on both towers' attention (tuning=adapter: a bottleneck adapter per block), trained with cross-entropy "
        "over the batch's own classes only (symmetric image-text tuning)"
    )
    Options = SITOptions
    needs_task_boundaries = False  # one LoRA through the stream (or the task sequence), merged at the end

    def __init__(self, options: SITOptions | None = None) -> None:
        super().__init__(options)
        self.peft = None
        self.data: CaptionedImages | None = None
        self.memory: StreamMemory | None = None  # a stream's memory (memory_size > 0), fresh at begin_task
        self.generator: torch.Generator | None = None
        self._stage_model: CLIPModel | None = None
        self._resumed_lora: dict[str, torch.Tensor] | None = None

    # -- lifecycle -----------------------------------------------------------------------
    def setup(self, model: CLIPModel, context) -> None:
        if self.options.tuning == "lora":
            check_target_modules(model, TARGET_MODULES)
        elif not any(True for _ in encoder_layers(model)):
            raise ValueError("sit: tuning=adapter needs CLIP encoder layers (self_attn, layer_norm1, mlp, layer_norm2)")
        if self.options.memory_size and not context.streaming:  # before the run writes anything
            raise ValueError(
                f"method.memory_size={self.options.memory_size}: sit's memory holds stream samples (observe_batch); "
                "use data.stream=online, or memory_size=0 one task at a time"
            )
        super().setup(model, context)

    def begin_task(self, stage: Stage, data: CaptionedImages | None) -> None:
        self._stage_model = None
        self.data = data
        self.memory = StreamMemory(self.options.memory_size) if self.options.memory_size else None
        self.generator = torch.Generator().manual_seed(sit_seed(self.context.seed, stage.index))
        if self.options.tuning == "adapter":
            if not has_adapters(self.model):  # one set of adapters for the whole run (resumed: load_state_dict added them)
                self._add_adapters()
        elif self.peft is None:
            self._add_lora(stage.index)

    def _add_adapters(self) -> None:
        """Fresh adapters (up-projections zero: the pre-trained model's outputs) on the frozen model; only they train,
        as the authors' freeze of everything but ``adaptmlp`` (the temperature too)."""
        opts = self.options
        self.model.requires_grad_(False)
        with torch.random.fork_rng(devices=[]):  # the init draws from its own seed, not the engine's stream
            torch.manual_seed(sit_seed(self.context.seed, -1))
            add_adapters(self.model, opts.adapter_bottleneck, opts.adapter_scale, opts.adapter_dropout)

    def _add_lora(self, stage_index: int) -> None:
        """Fresh LoRA on the pre-trained weights, or (resumed in task mode) the saved LoRA on them again."""
        if self._resumed_lora is not None:  # the checkpoint's model holds W0 + BA: put W0 back exactly
            pretrained = self.context.load_pretrained().state_dict()
            self.model.load_state_dict(pretrained)
        opts = self.options
        with torch.random.fork_rng(devices=[]):  # the init draws from its own seed, not the engine's stream
            torch.manual_seed(sit_seed(self.context.seed, -1))
            self.peft = add_lora(self.model, rank=opts.rank, alpha=opts.lora_alpha, dropout=0.0, target_modules=TARGET_MODULES)
        if opts.lora_b_init == "xavier":
            xavier_qkv(self.model, torch.Generator().manual_seed(sit_seed(self.context.seed, -2)))
        if self._resumed_lora is not None:
            params = dict(lora_parameters(self.model))
            if set(params) != set(self._resumed_lora):
                raise ValueError("method 'sit': the saved LoRA does not match this model's LoRA layers")
            with torch.no_grad():
                for name, value in self._resumed_lora.items():
                    params[name].copy_(value)
            self._resumed_lora = None

    def end_task(self, stage: Stage) -> None:
        self.data = None
        if self.options.tuning == "adapter":  # nothing folds: the adapted model is evaluated, its CLIP saved (model/)
            return
        last = self.context.streaming or stage.index == len(self.stages(self.context.task_names)) - 1
        if last:  # nothing follows: fold the LoRA into the weights, a plain CLIPModel
            self.model = self.peft.merge_and_unload()
            self.peft = None
            for param in self.model.parameters():
                param.requires_grad_(True)
        else:  # the LoRA goes on into the next task: evaluate and save a merged copy
            self._stage_model = copy.deepcopy(self.peft).merge_and_unload()
            for param in self._stage_model.parameters():
                param.requires_grad_(True)

    def evaluation_model(self) -> CLIPModel:
        """The stage's merged model at a stage's end; along a stream the live model (LoRA unmerged). With
        ``tuning=adapter`` always the live model, its adapters in it."""
        return self._stage_model if self._stage_model is not None else self.model

    def evaluation_beyond_model(self) -> str | None:
        if self.options.tuning != "adapter":
            return super().evaluation_beyond_model()  # LoRA merges into the weights: the saved CLIP is the evaluated one
        return (
            "runs both towers with a bottleneck adapter in every block (a ReLU MLP that does not fold into CLIP weights); "
            "the adapters are in the method state, model/ is the frozen CLIP they sit on"
        )

    # -- the loss ------------------------------------------------------------------------
    def training_loss(self, batch: Batch, step: int) -> LossOutput:
        with_memory = self.memory is not None and len(self.memory) > 0
        if with_memory:
            batch = self.with_memory(batch)
        if not isinstance(batch, ClassBatch):
            output = super().training_loss(batch, step)  # the CLIP loss: symmetric over the batch's captions
        else:
            visible = "all" if self.options.memory_size > 0 else self.options.visible_classes
            name, loss, classes = self.class_loss(batch, visible)
            output = LossOutput(loss, {name: float(loss.detach()), "classes": float(classes)})
        if with_memory:
            output.logs["replayed"] = float(self.memory_rows)
        return output

    def class_loss(self, batch: ClassBatch, visible: str) -> tuple[str, torch.Tensor, int]:
        """(log name, loss, number of classes in the loss) of a classification batch."""
        templates = batch.class_templates
        if visible == "batch":
            classes = torch.unique(batch.labels)  # C_B, sorted
            offsets = torch.arange(templates, device=classes.device)
            rows = (classes[:, None] * templates + offsets).flatten().to(batch.input_ids.device)
            texts = class_embeddings(text_embeddings(self.model, batch.input_ids[rows], batch.attention_mask[rows]), templates)
            labels = torch.searchsorted(classes, batch.labels)
        else:
            texts, labels = batch.text_side(self.model), batch.labels
        images = image_embeddings(self.model, batch.pixel_values)
        scale, smoothing = self.logit_scale(), self.context.label_smoothing
        if self.options.ce_on_probabilities:
            logits = scale * F.normalize(images, dim=-1) @ F.normalize(texts, dim=-1).t()
            loss = F.cross_entropy(logits.softmax(dim=-1), labels, label_smoothing=smoothing)
        else:
            loss = class_prompt_loss(images, texts, labels, scale, label_smoothing=smoothing)
        return "ce", loss, len(texts)  # logged as every classification loss; ``classes`` says over how many

    # -- the memory (streams) ------------------------------------------------------------
    def with_memory(self, batch: Batch) -> Batch:
        """The batch followed by M = B - B // 2 distinct memory samples (all of them if fewer), drawn afresh."""
        positions = self.memory.sample(len(batch) - len(batch) // 2, self.generator)
        self.memory_rows = len(positions)
        bundle = self.context.bundle
        pixels = bundle.preprocess.normalize_uint8(self.data.images[positions])
        if isinstance(batch, ClassBatch):  # a memory sample's class was seen before: it is in the batch's label space
            labels = self.data.labels[positions].to(batch.labels.device)
            return batch._appended(pixels, [], bundle, labels=torch.cat([batch.labels, labels]))
        picks = torch.randint(0, 1 << 30, (len(positions),), generator=self.generator).tolist()
        captions = [self.data.captions[p][k % len(self.data.captions[p])] for p, k in zip(positions, picks)]
        return batch.with_pairs(pixels, captions, bundle)

    def observe_batch(self, data: CaptionedImages, indices: torch.Tensor) -> None:
        """The batch's positions offered to the reservoir (the authors' update_memory; vlcl.methods.parts.memory)."""
        if self.memory is not None:
            self.memory.offer(indices.tolist(), self.generator)

    # -- state ---------------------------------------------------------------------------
    def step_state_dict(self) -> dict[str, Any]:
        if self.memory is None:
            return {}
        return {"memory": self.memory.state_dict(), "generator": self.generator.get_state()}

    def load_step_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        if set(state) != {"memory", "generator"} or self.memory is None:
            raise ValueError(f"method 'sit': unexpected in-stage state keys {sorted(state)}")
        try:
            self.memory.load_state_dict(state["memory"])
        except ValueError as exc:
            raise ValueError(f"method 'sit': {exc}") from None
        self.generator.set_state(state["generator"])

    def state_dict(self) -> dict[str, Any]:
        """Between tasks (task mode): the LoRA that goes on into the next task (the saved model has it merged); with
        ``tuning=adapter``, after every stage: the adapters (the saved model is the CLIP without them)."""
        if self.options.tuning == "adapter":
            return {"adapters": adapter_state_dict(self.model)} if has_adapters(self.model) else {}
        if self.peft is not None:
            return {"lora": {name: p.detach().clone() for name, p in lora_parameters(self.model)}}
        if self._resumed_lora is not None:
            return {"lora": dict(self._resumed_lora)}
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        known = {"adapters"} if self.options.tuning == "adapter" else {"lora"}
        unknown = set(state) - known
        if unknown:
            raise ValueError(f"method 'sit': unexpected state keys {sorted(unknown)} (tuning={self.options.tuning})")
        if "lora" in state:
            self._resumed_lora = dict(state["lora"])
        if "adapters" in state:  # on the checkpoint's CLIP (model/, the frozen weights) at once: load_run evaluates it
            if not has_adapters(self.model):
                self._add_adapters()
            load_adapter_state_dict(self.model, state["adapters"])


def xavier_qkv(model: torch.nn.Module, generator: torch.Generator) -> None:
    """The authors' init of their fused in_proj LoRA, on PEFT's separate q/k/v LoRA of each attention: one A
    [r, d] Xavier-uniform copied to q, k and v, and one B [3d, r] Xavier-uniform split into their three Bs (the
    out_proj LoRA keeps A Kaiming-uniform and B zero, as the authors' out_proj)."""
    for module in model.modules():
        projections = [getattr(module, n, None) for n in ("q_proj", "k_proj", "v_proj")]
        if not all(p is not None and hasattr(p, "lora_A") for p in projections):
            continue
        key = next(iter(projections[0].lora_A.keys()))
        a = projections[0].lora_A[key].weight
        b_rows = sum(p.lora_B[key].weight.shape[0] for p in projections)
        rank, width = a.shape
        shared_a = _xavier((rank, width), generator)
        full_b = _xavier((b_rows, rank), generator)
        with torch.no_grad():
            start = 0
            for p in projections:
                pa, pb = p.lora_A[key].weight, p.lora_B[key].weight
                pa.copy_(shared_a.to(pa))
                pb.copy_(full_b[start : start + pb.shape[0]].to(pb))
                start += pb.shape[0]


def _xavier(shape: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """torch.nn.init.xavier_uniform_ of a [fan_out, fan_in] weight, drawn from ``generator``."""
    bound = math.sqrt(6.0 / (shape[0] + shape[1]))
    return (torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1).mul(bound).float()
