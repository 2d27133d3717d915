"""The Explorer page (its code: ``infoflow.app.views.explorer``)."""

from infoflow.app.shell import show
from infoflow.app.views import explorer

show(explorer.render)
