"""CMCL as the authors' code runs it (Xiaohao-Liu/CMCL, cmcl/dns.py), on a CLIPModel.

The per-modality maps are CLIP's two final projections (``visual_projection``,
``text_projection``) on top of frozen towers, as CMCL's maps sit on frozen
binders; from the second task on, before AdamW, each projection's gradient is

    G_m <- G_m - P'_m G_m P_m,   P_m = P(Sigma_m, lambda_i > 0.1),   P'_m = P(Sigma'_m, lambda_i > 0)

with absolute eigenvalue thresholds (cmcl/dns.py ``pre_step``: ``get_projector(Z, lambda_min=self.lambda_min)``
for the inputs, ``lambda_min=0`` for the outputs; training.py's ``lambda_min = 1e-1``). Everything else -
the covariances, the projection, the state - is :class:`vlcl.methods.cmcl.CMCL`'s with these settings.

Measured on the embedded benchmark (docs/results/embedded_cmcl.md): the absolute
0.1 protects a handful of the 128 directions of the pooled features (the
threshold depends on the features' scale), P' with threshold 0 keeps every
direction (so the projection is one-sided in effect), and at the benchmark's
learning rate 1e-4 the two projections barely move, projected or not.
"""

from __future__ import annotations

from pydantic import Field

from vlcl.methods.base import MethodOptions
from vlcl.methods.cmcl import CMCL, DNSSettings
from vlcl.methods.registry import register_method


class CMCLOfficialOptions(MethodOptions):
    input_threshold: float = Field(0.1, ge=0)
    """lambda of the input-side projector P, an absolute eigenvalue (training.py's ``lambda_min``)."""
    output_threshold: float = Field(0.0, ge=0)
    """lambda of the output-side projector P' (cmcl/dns.py: 0, every direction the partner's old features use)."""
    covariance_batch_size: int = Field(256, ge=1)


@register_method
class CMCLOfficial(CMCL):
    name = "cmcl_official"
    description = "CMCL as its authors' code: gradient projection of the two final projections only, absolute thresholds"
    Options = CMCLOfficialOptions
    tuning_grid = {"input_threshold": (0.1, 1.0)}  # the authors' lambda_min, and one that frees more directions

    settings = ("captions", "classification")  # the modality-pair setting is cmcl's feature mode (docs/methods/cmcl.md)

    def dns_settings(self) -> DNSSettings:
        o = self.options
        return DNSSettings("projections", "gradient", "absolute", o.input_threshold, o.output_threshold, o.covariance_batch_size)
