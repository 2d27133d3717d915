"""The Recall methods page (its code: ``infoflow.app.views.recall``)."""

from infoflow.app.shell import show
from infoflow.app.views import recall

show(recall.render)
