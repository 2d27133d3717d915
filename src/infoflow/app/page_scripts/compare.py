"""The Compare info flow page (its code: ``infoflow.app.views.compare``)."""

from infoflow.app.shell import show
from infoflow.app.views import compare

show(compare.render)
