"""What an answer holds beyond the breeds: the "not a dog" refusal (docs/serving.md, the answer's fields)."""

from __future__ import annotations

from http import HTTPStatus

from .errors import RequestError


class NotADog(RequestError):
    """``reject_non_dogs`` asked, and no photo of the request shows a dog."""

    status = HTTPStatus.UNPROCESSABLE_ENTITY


def refuse_non_dogs(prediction: dict) -> dict:
    """``reject_non_dogs``: a 422 where no photo shows a dog; else the non-dogs' predictions (and explanations)
    emptied, their ``dog`` verdicts kept, so that the answer stays aligned with the photos."""
    dogs = prediction["dog"]
    if dogs and not any(d["is_dog"] for d in dogs):
        scores = ", ".join(f"{d['score']:.3g}" for d in dogs[:8])
        raise NotADog(f"not a dog: dog score {scores} under the threshold {dogs[0]['threshold']}")
    kept = dict(prediction)
    kept["predictions"] = [rows if d["is_dog"] else [] for rows, d in zip(prediction["predictions"], dogs, strict=True)]
    if "explanations" in prediction:
        kept["explanations"] = [e if d["is_dog"] else None for e, d in zip(prediction["explanations"], dogs, strict=True)]
    return kept
