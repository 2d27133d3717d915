"""The Mamba features page (its code: ``infoflow.app.views.features``)."""

from infoflow.app.shell import show
from infoflow.app.views import features

show(features.render)
