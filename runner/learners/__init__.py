"""Learners: the base learner owns the plumbing; a learner writes only its loss."""
