"""The Heatmaps page (its code: ``infoflow.app.views.heatmaps``)."""

from infoflow.app.shell import show
from infoflow.app.views import heatmaps

show(heatmaps.render)
