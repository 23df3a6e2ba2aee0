"""What the image tests measured (stage times, image size), printed at the end of the run."""

REPORT: dict[str, str] = {}
