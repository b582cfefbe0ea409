"""scikit-learn estimators backed by a Gradual service: `GradualClassifier`, `GradualRegressor`.

`fit` creates a fresh model on the service (deleting the one this estimator made before) and
streams the data to it for `epochs` shuffled passes; `partial_fit` creates it on the first call
and streams one pass per call. Afterwards the training head is checkpointed and served, so
`predict` answers with exactly what was trained. By default every row trains (`holdout` 0),
like `MLPClassifier` without early stopping; pass `training={"holdout": 0.1, "promote":
"best"}` to let the service hold rows out, stop early and serve its best version instead.

Class labels of any type map to class ids `0..k-1` (`classes_`) and back. The estimators work
in a `Pipeline` and in `cross_val_score`: each clone fits its own uniquely named model (unless
`model_name` is fixed, which suits one estimator, not clones).

A model the estimator named itself (`sklearn-<random>`) is temporary: it is deleted from the
service by `close()`, at the end of a `with` block, or when the estimator is garbage-collected
(or the interpreter exits), so `cross_val_score` leaves nothing behind. A model with a fixed
`model_name` stays on the service; `delete_model()` removes either kind.

    with GradualClassifier("http://127.0.0.1:8000") as model:
        model.fit(X_train, y_train).score(X_test, y_test)
"""

from service.extras import require

require("sklearn", extra="sklearn", purpose="the scikit-learn estimators")
from service.client.sklearn.classifier import GradualClassifier  # noqa: E402
from service.client.sklearn.regressor import GradualRegressor  # noqa: E402

__all__ = ["GradualClassifier", "GradualRegressor"]
