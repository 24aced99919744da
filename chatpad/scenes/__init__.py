"""The screens. Each has ``handle(event)``, ``update(dt)``, ``draw(surface)``,
``layout(size)`` and ``close()``; none touches a socket: they read the model and send
commands through their host (the app), as :class:`SceneHost` describes it.

One module each: ``base`` (the host protocol and the base class), ``login``,
``conversations`` (the list), ``conversation`` (one chat), ``search`` (the local cache's
messages) and ``settings`` (the account, its local data, signing out)."""

from chatpad.scenes.base import Scene, SceneHost
from chatpad.scenes.conversation import ConversationScene
from chatpad.scenes.conversations import ConversationsScene
from chatpad.scenes.login import LoginScene
from chatpad.scenes.search import SearchScene
from chatpad.scenes.settings import SettingsScene

__all__ = ["ConversationScene", "ConversationsScene", "LoginScene", "Scene", "SceneHost",
           "SearchScene", "SettingsScene"]
