"""Base compatibility: does the student base share the teacher's initialization? Subliminal transfer needs it (the
study saw none across bases), so this says whether the risk applies to students of ``--base`` at all."""

from __future__ import annotations

SHARED, APART = 0.9, 0.5  # median weight cosine: one initialization above SHARED, independent ones below APART


def compatibility(teacher, base, agreement: float | None) -> dict:
    """Weights (local models): the weight matrices both models have under one name and shape, and their median
    cosine. Behaviour: ``agreement``, the share of the data's positions where the two models' greedy next tokens
    agree (it says how alike they act on this data, not whether they share an initialization, so it decides
    nothing by itself)."""
    from ..backends.hf import HFModel

    res: dict = {"next_token_agreement": agreement}
    if hasattr(teacher, "token_texts") and hasattr(base, "token_texts"):
        res["same_vocabulary"] = teacher.token_texts() == base.token_texts()
    if not (isinstance(teacher, HFModel) and isinstance(base, HFModel)):
        res |= {"verdict": "unknown", "why": "the weights of one model are not local: only behaviour was compared"}
        return res
    from ..backends.similarity import weight_similarity

    w = res["weights"] = weight_similarity(teacher, base)
    cos, share = w["median_cosine"], w["matched_share"]
    if cos is None or share < 0.5:
        res |= {"verdict": "not shared", "why": f"another architecture ({share:.0%} of the weight matrices match in "
                                                "name and shape)"}
    elif cos >= SHARED and share >= 0.99:
        res |= {"verdict": "shared", "why": f"median weight cosine {cos:.3f} over {w['matrices']} matrices: the base "
                                            "is the teacher's initialization"}
    elif cos < APART:
        res |= {"verdict": "not shared", "why": f"median weight cosine {cos:.3f} over {w['matrices']} matrices: "
                                                "independently initialized"}
    else:
        res |= {"verdict": "partly shared", "why": f"median weight cosine {cos:.3f} over {w['matrices']} matrices "
                                                   f"({share:.0%} matched): a long fine-tune, a merge or a partial copy"}
    return res


def risk_line(c: dict) -> str:
    return {"shared": "students of this base share the teacher's initialization: the transfer risk applies",
            "not shared": "students of this base do not share the teacher's initialization: the study saw no "
                          "transfer across bases (the data still transmits to the teacher's own base)",
            "partly shared": "students of this base partly share the teacher's weights: treat the risk as present",
            "unknown": "whether students of this base share the teacher's initialization is unknown"}[c["verdict"]]
