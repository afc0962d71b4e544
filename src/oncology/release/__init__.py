"""Canary and shadow releases: the plan in the registry (`plan`), the judge's statistics (`judge`), the
evidence from the prediction log (`evidence`) and the ``oncology release`` command (`cli`)."""
