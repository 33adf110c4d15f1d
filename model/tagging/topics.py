"""Where bundles written before the topic modules were split find their pickled classes.

A bundle's ``topics.joblib`` (and a fit-cache entry) names its classes by module path:
``model.tagging.topics.TopicTagger`` and ``model.tagging.topics.TopicClassifier``. These aliases
keep those bundles loading; new code imports from `model.tagging.topic_tagger`,
`model.tagging.topic_classifier` and `model.tagging.label_gate`.
"""

from model.tagging.topic_classifier import TopicClassifier
from model.tagging.topic_tagger import TopicTagger

__all__ = ["TopicClassifier", "TopicTagger"]
