"""ben-lab: lab experiments harvested, calibrated, described; its evaluation."""
