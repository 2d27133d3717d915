"""The Launch page (its code: ``infoflow.app.views.launch``)."""

from infoflow.app.shell import show
from infoflow.app.views import launch

show(launch.render)
