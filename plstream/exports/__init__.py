"""What ``plstream export`` writes from a result file and its movie: aligned frames, a validation report."""
