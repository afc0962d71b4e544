"""`Tumor`: the pydantic model of a tumor, on the features of `oncology_model.datamodel` (re-exported there and
by the package, loaded on first use)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from oncology_model.datamodel import FEATURE_DESCRIPTIONS as _D
from oncology_model.datamodel import SCORE_MAX, SCORE_MIN, TUMOR_EXAMPLE, row_of

#: A cytology score: a whole number from 1 to 10.  Strict: 3.5, "3", true and null are refused.
Score = Annotated[int, Field(strict=True, ge=SCORE_MIN, le=SCORE_MAX)]


class Tumor(BaseModel):
    """The nine cytology features of a fine-needle aspirate, each scored 1-10 by a clinician."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, json_schema_extra={"examples": [{**TUMOR_EXAMPLE}]})

    clump_thickness: Score = Field(description=_D["clump_thickness"])
    uniformity_of_cell_size: Score = Field(description=_D["uniformity_of_cell_size"])
    uniformity_of_cell_shape: Score = Field(description=_D["uniformity_of_cell_shape"])
    marginal_adhesion: Score = Field(description=_D["marginal_adhesion"])
    single_epithelial_cell_size: Score = Field(description=_D["single_epithelial_cell_size"])
    bare_nuclei: Score = Field(description=_D["bare_nuclei"])
    bland_chromatin: Score = Field(description=_D["bland_chromatin"])
    normal_nucleoli: Score = Field(description=_D["normal_nucleoli"])
    mitoses: Score = Field(description=_D["mitoses"])

    def as_row(self) -> tuple[int, ...]:
        """The feature values in `FEATURES` order."""
        return row_of(self)  # type: ignore[no-any-return,unused-ignore]
