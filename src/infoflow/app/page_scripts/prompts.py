"""The Prompts page (its code: ``infoflow.app.views.prompts``)."""

from infoflow.app.shell import show
from infoflow.app.views import prompts

show(prompts.render)
