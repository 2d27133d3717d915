"""The Runs page (its code: ``infoflow.app.views.runs``)."""

from infoflow.app.shell import show
from infoflow.app.views import runs

show(runs.render)
