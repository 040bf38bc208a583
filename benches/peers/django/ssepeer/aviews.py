"""Async views (ASGI): redis.asyncio pub/sub feeding an async generator.

Same endpoints as views.py:
GET /events?topic=T[&topic=U...]  -> text/event-stream, one `data:` event per
                                      Redis message on any of the topics
POST /publish                     -> form topic=T&data=D, PUBLISH T D, 200 "ok"
"""
import redis.asyncio as aioredis
from django.conf import settings
from django.http import HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

# One pool per worker process; connections are made lazily on its event loop. Every
# open stream holds a connection of its own; redis-py's default pool cap (100) would
# refuse the 101st subscriber.
r = aioredis.Redis.from_url(
    settings.REDIS_URL, decode_responses=True, max_connections=settings.REDIS_MAX_CONNECTIONS
)


@require_GET
async def events(request):
    # `topic` may be repeated: one stream for several topics.
    topics = request.GET.getlist("topic")
    if not topics or not all(topics):
        return HttpResponseBadRequest("missing topic\n")
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(*topics)
    # Wait for the subscribe confirmations (one per distinct topic) so that nothing
    # published after the response headers reach the client can be missed.
    for _ in set(topics):
        await pubsub.get_message(timeout=5)

    async def stream():
        try:
            yield ": subscribed\n\n"
            while True:
                message = await pubsub.get_message(timeout=settings.SSE_HEARTBEAT)
                if message is None:
                    yield ": keepalive\n\n"
                else:
                    yield f"data: {message['data']}\n\n"
        finally:
            # Django cancels the response when the client disconnects.
            await pubsub.aclose()

    response = StreamingHttpResponse(stream(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


@csrf_exempt
@require_POST
async def publish(request):
    topic = request.POST.get("topic")
    data = request.POST.get("data")
    if not topic or data is None:
        return HttpResponseBadRequest("need topic and data\n")
    await r.publish(topic, data)
    return HttpResponse("ok\n", content_type="text/plain")
