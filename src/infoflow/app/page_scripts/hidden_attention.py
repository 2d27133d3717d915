"""The Hidden attention page (its code: ``infoflow.app.views.hidden``)."""

from infoflow.app.shell import show
from infoflow.app.views import hidden

show(hidden.render)
