"""How much of two local models' weights are the same: the evidence that one descends from the other's
initialization (subliminal transfer needs a shared initialization; the study saw none across bases)."""

from __future__ import annotations

from .hf import HFModel


def weight_similarity(a: HFModel, b: HFModel) -> dict:
    """Over the weight matrices (2-D parameters) the two models have under the same name and shape: their share of
    each model's matrix parameters, and the cosine similarity of each pair (flattened). An adapter is not merged: a
    LoRA teacher is compared through the base it sits on. Models of one initialization have cosines near 1 (training
    moves weights little); independently initialized ones near 0. Norm and bias vectors are left out (they start at
    constants, so they agree whatever the lineage)."""
    import torch

    pa = {n: p for n, p in a.model.named_parameters() if p.ndim >= 2}
    pb = {n: p for n, p in b.model.named_parameters() if p.ndim >= 2}
    common = [n for n in pa if n in pb and pa[n].shape == pb[n].shape]
    cos = {}
    with torch.no_grad():
        for n in common:
            x, y = pa[n].detach().float().flatten(), pb[n].detach().float().flatten()
            cos[n] = float(torch.nn.functional.cosine_similarity(x, y, dim=0))
    size_a = sum(p.numel() for p in pa.values()) or 1
    size_b = sum(p.numel() for p in pb.values()) or 1
    matched = sum(pa[n].numel() for n in common)
    return {"matched_share": min(matched / size_a, matched / size_b), "matrices": len(common),
            "median_cosine": float(torch.tensor(list(cos.values())).median()) if cos else None,
            "min_cosine": min(cos.values()) if cos else None}
