"""The trainer: raw data in, a verified, versioned model bundle with its KPIs out."""
