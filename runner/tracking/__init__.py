"""Tracking plumbing under the core: the MLflow store (:mod:`runner.tracking.store`), one owner per
run dir (:mod:`runner.tracking.ownership`) and storage that cannot be written
(:mod:`runner.tracking.storage`). These import nothing of runner but :mod:`runner.errors`; the core
(experiment, checkpoint, the MLflow logger) imports them. Import from the submodules."""
