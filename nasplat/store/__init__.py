"""The study store: Optuna RDB storage (SQLite by default, PostgreSQL the same), experiment state,
resume after a killed driver, and URL redaction."""

from nasplat.store.redact import redact_text, redact_url
from nasplat.store.study import (
    METRIC_NAMES,
    NEW_STUDY_FLAG,
    ExperimentState,
    ExperimentStateStore,
    StoredTrial,
    StudyIdentity,
    StudyStore,
    arch_distributions,
    arch_params,
    identity_differences,
    load_current_study,
    open_storage,
    open_study,
    store_exists,
)

__all__ = [
    "METRIC_NAMES",
    "NEW_STUDY_FLAG",
    "ExperimentState",
    "ExperimentStateStore",
    "StoredTrial",
    "StudyIdentity",
    "StudyStore",
    "arch_distributions",
    "arch_params",
    "identity_differences",
    "load_current_study",
    "open_storage",
    "open_study",
    "redact_text",
    "redact_url",
    "store_exists",
]
